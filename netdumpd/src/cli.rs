//! Command-line options of the daemon.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use netdump_core::proto::AfterDump;

use crate::server::ServerConfig;

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
/// `vmcore` (or `vmcore-incomplete`), `log`, `extra` and `info.json`; registered
/// clients are kept in `<DIR>/clients.json`.
#[derive(Debug, Clone, Parser)]
#[command(name = "netdumpd", version)]
pub struct Cli {
    /// UDP address and port to listen on.
    #[arg(long, value_name = "ADDR:PORT", default_value = "0.0.0.0:6666")]
    pub listen: SocketAddr,

    /// Directory for dumps and the client registry (created if missing).
    #[arg(long, value_name = "PATH", default_value = "/var/crash/netdump")]
    pub dir: PathBuf,

    /// Seconds of silence after which a dump in progress is marked incomplete.
    #[arg(long, value_name = "SECONDS", default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..))]
    pub session_timeout: u64,

    /// What the client is told to do after its dump.
    #[arg(long, value_enum, default_value_t = AfterDumpArg::Reboot)]
    pub after_dump: AfterDumpArg,

    /// MiB to keep free on the dump file system: a dump that does not fit beside this
    /// reserve gets only its log and registers taken (SKIP_MEMORY).
    #[arg(long, value_name = "MIB", default_value_t = 64)]
    pub min_free: u64,

    /// Dumps received at the same time; one more crash is told to abort.
    #[arg(long, value_name = "N", default_value_t = 16, value_parser = clap::value_parser!(u64).range(1..=4096))]
    pub max_sessions: u64,

    /// Log filter, in tracing's env-filter syntax: error, warn, info, debug, trace, or
    /// e.g. `netdumpd=debug`. Defaults to $RUST_LOG, else `info`.
    #[arg(long, value_name = "FILTER")]
    pub log_level: Option<String>,
}

impl Cli {
    pub fn server_config(&self) -> ServerConfig {
        ServerConfig {
            listen: self.listen,
            dump_dir: self.dir.clone(),
            session_timeout: Duration::from_secs(self.session_timeout),
            after_dump: match self.after_dump {
                AfterDumpArg::Reboot => AfterDump::Reboot,
                AfterDumpArg::Halt => AfterDump::Halt,
            },
            min_free_bytes: self.min_free.saturating_mul(1 << 20),
            max_sessions: self.max_sessions as usize,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn defaults_match_the_server_defaults() {
        let cli = Cli::parse_from(["netdumpd"]);
        assert_eq!(cli.server_config(), ServerConfig::default());
        assert_eq!(cli.log_level, None);
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
            "--log-level",
            "debug",
        ]);
        let c = cli.server_config();
        assert_eq!(c.listen, "127.0.0.1:7000".parse().unwrap());
        assert_eq!(c.dump_dir, PathBuf::from("./crash"));
        assert_eq!(c.session_timeout, Duration::from_secs(5));
        assert_eq!(c.after_dump, AfterDump::Halt);
        assert_eq!(c.min_free_bytes, 1 << 20);
        assert_eq!(c.max_sessions, 2);
        assert_eq!(cli.log_level.as_deref(), Some("debug"));
    }

    #[test]
    fn nonsense_is_refused() {
        assert!(Cli::try_parse_from(["netdumpd", "--after-dump", "explode"]).is_err());
        assert!(Cli::try_parse_from(["netdumpd", "--session-timeout", "0"]).is_err());
        assert!(Cli::try_parse_from(["netdumpd", "--listen", "nowhere"]).is_err());
    }
}
