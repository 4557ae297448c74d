//! Command-line options of the daemon and its admin subcommands.
//!
//! `netdumpd [flags]` (or `netdumpd run [flags]`) runs the server; `netdumpd list`,
//! `show <dump>` and `check-config` look at a dump directory and a configuration (`list`
//! and `show` at the object storage too, with `--bucket`); `fetch` restores a dump from it;
//! `keygen` makes a key pair; `man` and `completions` print the manual page and shell
//! completions, generated from this definition. Every setting comes from a flag, else the
//! `--config` file, else its default; every flag is accepted before or after the
//! subcommand.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

use crate::config::ServerConfig;
use crate::config::{
    AnalysisSection, ConfigFile, DedupSection, EncryptionSection, HooksSection, NetconsoleSection, RetentionSection,
};
use crate::logging::LogFormat;

pub use crate::exit;

/// The daemon's conventions, for `--help` and the manual page alike: (section, entries
/// of (term, text)).
pub const DAEMON_SECTIONS: &[(&str, &[(&str, &str)])] = &[
    (
        "EXIT STATUS",
        &[
            ("0", "Success; for check-config: nothing wrong."),
            (
                "1",
                "Failure while running (the socket cannot be bound, a file cannot be written), \
                 check-config found a problem, or show found no such dump.",
            ),
            ("2", "Usage error: unknown flag or subcommand, bad value."),
            (
                "78",
                "Configuration error (EX_CONFIG): the file cannot be read or parsed, a value is out \
                 of range, a log filter or private key is bad. The shipped unit does not restart on it.",
            ),
            ("130", "A second SIGINT or SIGTERM ended the shutdown at once."),
        ],
    ),
    (
        "SIGNALS",
        &[
            (
                "SIGTERM, SIGINT",
                "Stop: dumps in progress are marked incomplete, the registry and stats.json written, \
                 hooks and analyses finish; then exit 0.",
            ),
            (
                "SIGHUP",
                "Write the registry and stats.json, then read the configuration again (same --config \
                 file and flags). Applied at once: session_timeout, after_dump, min_free_mib, \
                 max_sessions, max_memory_dumps, progress_interval, log_level, [hooks], [retention], \
                 [dedup], [analysis], [encryption], and the [limits] rates, max_dump_gib, \
                 log_lines_per_second, max_signatures, max_excluded_runs and max_receive_mib. Logged \
                 as needing a restart and left as they run: listen, dir, [netconsole], [upload], \
                 log_format (--log-format), and [limits] max_clients, max_retired, \
                 max_hook_processes, max_queued_jobs. A configuration that does not parse or validate \
                 is refused as a whole (logged) and the running one kept.",
            ),
        ],
    ),
    (
        "LOGGING",
        &[
            (
                "--log-format text",
                "Lines on stderr; coloured only when stderr is a terminal and NO_COLOR is unset. The \
                 default, except under systemd.",
            ),
            ("--log-format json", "One JSON object a line on stderr: timestamp, level, target, message, fields."),
            (
                "--log-format journald",
                "Straight to the systemd journal, fields as journal fields. The default when stderr is \
                 the journal ($JOURNAL_STREAM).",
            ),
        ],
    ),
    (
        "SYSTEMD",
        &[(
            "Type=notify",
            "READY=1 once the socket is bound; RELOADING=1 then READY=1 around a SIGHUP reload; \
             STOPPING=1 when the shutdown begins; STATUS= with each ($NOTIFY_SOCKET).",
        )],
    ),
    (
        "ENVIRONMENT",
        &[
            ("RUST_LOG", "The log filter when neither --log-level nor log_level is given."),
            ("NO_COLOR", "Set and not empty: no colour in text logs."),
            ("JOURNAL_STREAM", "Set by systemd; when it names stderr, the log goes to the journal."),
            ("NOTIFY_SOCKET", "Set by systemd for Type=notify; readiness is sent there."),
        ],
    ),
];

/// [`DAEMON_SECTIONS`] as text, after the options of `netdumpd --help`.
pub fn daemon_help() -> String {
    let mut out = String::new();
    for (title, entries) in DAEMON_SECTIONS {
        out.push_str(&format!("{title}:\n"));
        for (term, text) in *entries {
            out.push_str(&format!("  {term}\n"));
            for line in wrap(text, 76) {
                out.push_str(&format!("      {line}\n"));
            }
        }
        out.push('\n');
    }
    out.push_str("Manual page: `netdumpd man`; completions: `netdumpd completions bash|zsh|fish`.");
    out
}

/// `text` in lines of at most `width` characters (words are not broken).
fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines = vec![String::new()];
    for word in text.split_whitespace() {
        let line = lines.last_mut().expect("never empty");
        if !line.is_empty() && line.len() + 1 + word.len() > width {
            lines.push(word.to_string());
        } else {
            if !line.is_empty() {
                line.push(' ');
            }
            line.push_str(word);
        }
    }
    lines
}

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
#[command(name = "netdumpd", version, after_long_help = daemon_help())]
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

    /// Log format: text or json on stderr, or journald [default: journald when stderr is
    /// the systemd journal, else text].
    #[arg(long, global = true, value_enum, value_name = "FORMAT")]
    pub log_format: Option<LogFormat>,

    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Clone, Subcommand)]
pub enum Command {
    /// Run the server (the default).
    Run,
    /// List the dumps: client, dump, status, size, signature, age. With --bucket, the
    /// dumps in the object storage of [upload], every server's.
    List {
        /// Machine-readable output (a JSON array, one object per dump).
        #[arg(long)]
        json: bool,
        /// Read the bucket of the configuration's [upload] instead of the dump directory.
        #[arg(long)]
        bucket: bool,
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
        /// Read the dump from the bucket of the configuration's [upload]: DUMP is then
        /// `<dump>@<server>`, a dump name, or a client name.
        #[arg(long)]
        bucket: bool,
    },
    /// Restore a dump from the bucket of [upload]: every file, the vmcore sparse and
    /// checked against its manifest's CRC-32s, ready for `gdb kernel vmcore`.
    Fetch {
        /// `<client>/<dump>@<server>`, `<dump>@<server>`, a dump name, or a client name
        /// (its newest dump).
        dump: String,
        /// The directory to create for the files [default: ./<dump>@<server>].
        #[arg(long, value_name = "DIR")]
        to: Option<PathBuf>,
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
    /// Print the manual page, netdumpd(8), in roff: `netdumpd man >
    /// /usr/local/share/man/man8/netdumpd.8`.
    Man,
    /// Print the completion script of SHELL: e.g. `netdumpd completions bash >
    /// /usr/local/share/bash-completion/completions/netdumpd`.
    Completions {
        /// The shell to complete in.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

/// The manual page, netdumpd(8): the options and subcommands from the clap definition,
/// each subcommand's own options, then [`DAEMON_SECTIONS`].
pub fn man_page() -> std::io::Result<Vec<u8>> {
    use clap::CommandFactory;
    let cmd = Cli::command();
    let man = clap_mangen::Man::new(cmd.clone()).section("8").manual("System Administration");
    let mut out = Vec::new();
    man.render_title(&mut out)?;
    man.render_name_section(&mut out)?;
    man.render_synopsis_section(&mut out)?;
    man.render_description_section(&mut out)?;
    man.render_options_section(&mut out)?;
    man.render_subcommands_section(&mut out)?;
    for sub in cmd.get_subcommands() {
        // Only the subcommand's own arguments: the global ones are above.
        if sub.get_arguments().all(|a| a.is_global_set() || a.get_id() == "help") {
            continue;
        }
        let sub = sub.clone().disable_help_flag(true);
        let mut section = Vec::new();
        clap_mangen::Man::new(sub.clone()).render_options_section(&mut section)?;
        let text = String::from_utf8_lossy(&section);
        let heading = format!(".SH \"NETDUMPD {}\"", sub.get_name().to_uppercase());
        out.extend_from_slice(text.replacen(".SH OPTIONS", &heading, 1).as_bytes());
    }
    for (title, entries) in DAEMON_SECTIONS {
        out.extend_from_slice(format!(".SH \"{title}\"\n").as_bytes());
        for (term, text) in *entries {
            out.extend_from_slice(format!(".TP\n\\fB{}\\fR\n{}\n", roff_escape(term), roff_escape(text)).as_bytes());
        }
    }
    out.extend_from_slice(
        b".SH \"SEE ALSO\"\nnetdumpd/README.md, contrib/netdumpd.toml and contrib/netdumpd.service in the netdump sources.\n",
    );
    man.render_version_section(&mut out)?;
    Ok(out)
}

/// Text for a roff paragraph: backslashes and hyphens escaped, no line starting a request.
fn roff_escape(text: &str) -> String {
    let escaped = text.replace('\\', "\\e").replace('-', "\\-");
    if escaped.starts_with(['.', '\'']) { format!("\\&{escaped}") } else { escaped }
}

/// The completion script of `shell`.
pub fn completions(shell: clap_complete::Shell) -> Vec<u8> {
    use clap::CommandFactory;
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "netdumpd", &mut out);
    out
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

    /// The log filter in force: the flag, else the file's `log_level`, else `$RUST_LOG`,
    /// else `info`.
    pub fn log_filter(&self) -> anyhow::Result<String> {
        Ok(match self.log_level()? {
            Some(level) => level,
            None => std::env::var("RUST_LOG").ok().filter(|v| !v.is_empty()).unwrap_or_else(|| "info".to_string()),
        })
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
            log_format: self.log_format,
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
            upload: Default::default(),
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
        std::fs::write(
            &file,
            "dir = \"/from/file\"\nmax_sessions = 3\nlog_level = \"warn\"\nlog_format = \"journald\"\n",
        )
        .unwrap();
        let path = file.to_str().unwrap();
        let cli = Cli::parse_from(["netdumpd", "--config", path, "--dir", "/from/flag", "--log-format", "json"]);
        let c = cli.server_config().unwrap();
        assert_eq!((c.dump_dir, c.max_sessions), (PathBuf::from("/from/flag"), 3));
        assert_eq!(c.log_format, Some(crate::logging::LogFormat::Json), "the flag wins");
        assert_eq!(cli.log_level().unwrap().as_deref(), Some("warn"));
        let from_file = Cli::parse_from(["netdumpd", "--config", path]).server_config().unwrap();
        assert_eq!(from_file.log_format, Some(crate::logging::LogFormat::Journald));
        // Subcommands take the global options after them too.
        let cli = Cli::parse_from(["netdumpd", "list", "--config", path, "--json"]);
        assert!(matches!(cli.command, Some(Command::List { json: true, bucket: false })));
        let show = Cli::parse_from(["netdumpd", "show", "--bucket", "node-1"]);
        assert!(matches!(show.command, Some(Command::Show { bucket: true, ref dump, .. }) if dump == "node-1"));
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

    /// A sample value for each flag that takes one (a new flag needs one here).
    fn sample_value(id: &str) -> &'static str {
        match id {
            "listen" => "127.0.0.1:7000",
            "netconsole_listen" => "127.0.0.1:5514",
            "after_dump" => "halt",
            "log_format" => "json",
            "log_level" => "debug",
            "config" | "dir" | "kernel" | "kernel_builds" | "private_keys" => "/p",
            id if id.starts_with("hook_") && !id.ends_with("timeout") => "/h",
            "session_timeout"
            | "min_free"
            | "max_sessions"
            | "max_memory_dumps"
            | "hook_decision_timeout"
            | "hook_timeout"
            | "max_dumps_per_client"
            | "max_mib_per_client"
            | "max_total_mib"
            | "dedup_days" => "3",
            other => panic!("no sample value for --{other}: add one"),
        }
    }

    #[test]
    fn every_flag_is_accepted_before_and_after_every_subcommand() {
        let cmd = Cli::command();
        let globals: Vec<_> = cmd.get_arguments().filter(|a| a.is_global_set()).collect();
        assert!(globals.len() >= 25, "the server's flags are global");
        for sub in ["run", "list", "check-config", "show", "keygen", "fetch"] {
            let own: &[&str] = match sub {
                "show" | "fetch" => &["some-dump"],
                "keygen" => &["--out", "/k"],
                _ => &[],
            };
            for arg in &globals {
                let flag = format!("--{}", arg.get_long().unwrap());
                let mut with: Vec<String> = vec![flag.clone()];
                if arg.get_action().takes_values() {
                    with.push(sample_value(arg.get_id().as_str()).to_string());
                }
                let before: Vec<String> = ["netdumpd".to_string()]
                    .into_iter()
                    .chain(with.iter().cloned())
                    .chain([sub.to_string()])
                    .chain(own.iter().map(|s| s.to_string()))
                    .collect();
                let after: Vec<String> = ["netdumpd".to_string(), sub.to_string()]
                    .into_iter()
                    .chain(own.iter().map(|s| s.to_string()))
                    .chain(with.iter().cloned())
                    .collect();
                let a = Cli::try_parse_from(&before).unwrap_or_else(|e| panic!("{before:?}: {e}"));
                let b = Cli::try_parse_from(&after).unwrap_or_else(|e| panic!("{after:?}: {e}"));
                assert_eq!(format!("{a:?}"), format!("{b:?}"), "{flag} before and after {sub}");
            }
        }
    }

    #[test]
    fn every_argument_of_every_command_has_help() {
        fn check(cmd: &clap::Command, path: &str) {
            for arg in cmd.get_arguments() {
                let id = arg.get_id().as_str();
                if id == "help" || id == "version" {
                    continue;
                }
                assert!(arg.get_help().is_some_and(|h| !h.to_string().trim().is_empty()), "{path} {id} has no help");
            }
            for sub in cmd.get_subcommands() {
                assert!(sub.get_about().is_some(), "{path} {} has no help", sub.get_name());
                check(sub, &format!("{path} {}", sub.get_name()));
            }
        }
        check(&Cli::command(), "netdumpd");
    }

    #[test]
    fn the_man_page_names_every_flag_subcommand_and_argument() {
        let man = String::from_utf8(man_page().unwrap()).unwrap();
        let mut cmd = Cli::command();
        cmd.build();
        let commands: Vec<&clap::Command> = std::iter::once(&cmd).chain(cmd.get_subcommands()).collect();
        for c in commands {
            assert!(man.contains(&c.get_name().replace('-', "\\-")), "the man page lacks {}", c.get_name());
            for arg in c.get_arguments() {
                let name = match (arg.get_long(), arg.get_value_names()) {
                    (Some(long), _) => format!("\\-\\-{}", long.replace('-', "\\-")),
                    (None, Some(names)) => format!("<\\fI{}\\fR>", names[0]),
                    (None, None) => continue,
                };
                assert!(man.contains(&name), "the man page lacks {name} of {}", c.get_name());
            }
        }
        for (title, entries) in DAEMON_SECTIONS {
            assert!(man.contains(&format!(".SH \"{title}\"")), "{title}");
            for (term, _) in *entries {
                assert!(man.contains(&roff_escape(term)), "{term}");
            }
        }
    }

    #[test]
    fn completions_generate_for_bash_zsh_and_fish_with_every_flag() {
        for shell in [clap_complete::Shell::Bash, clap_complete::Shell::Zsh, clap_complete::Shell::Fish] {
            let script = String::from_utf8(completions(shell)).unwrap();
            for arg in Cli::command().get_arguments() {
                if let Some(long) = arg.get_long() {
                    assert!(script.contains(long), "{shell}: no --{long}");
                }
            }
            for sub in ["run", "list", "show", "check-config", "keygen", "fetch", "man", "completions"] {
                assert!(script.contains(sub), "{shell}: no {sub}");
            }
        }
    }

    #[test]
    fn roff_text_cannot_start_a_request_or_end_in_an_escape() {
        assert_eq!(roff_escape(".SH x"), "\\&.SH x");
        assert_eq!(roff_escape("'x"), "\\&'x");
        assert_eq!(roff_escape("a-b \\n"), "a\\-b \\en");
    }
}
