//! SIGHUP: the configuration is read again, from the same `--config` file and flags
//! (flags still win), and what can change without a restart is applied; the rest keeps
//! its running value and is logged as needing a restart. A configuration that does not
//! read, parse or validate is refused as a whole, with the error in the log, and the
//! running one stays.
//!
//! | setting | on SIGHUP |
//! |---|---|
//! | `session_timeout`, `after_dump`, `min_free_mib`, `max_sessions`, `max_memory_dumps`, `progress_interval` | applied |
//! | `log_level` | applied |
//! | `[hooks]`, `[retention]`, `[dedup]`, `[analysis]` | applied (to crashes and dumps that begin or end after it) |
//! | `[limits]` `hellos_per_second`, `hellos_per_source_per_second`, `crashes_per_second`, `max_dump_gib`, `log_lines_per_second`, `max_signatures`, `max_excluded_runs` (dumps that begin after it), `max_receive_mib` | applied |
//! | `[encryption]` `private_keys`, `require_encryption` | applied to new handshakes (sessions in progress keep theirs); a key that does not load refuses the reload |
//! | `listen`, `dir`, `[netconsole]`, `log_format` (`--log-format`) | needs a restart |
//! | `[limits]` `max_clients`, `max_retired`, `max_hook_processes`, `max_queued_jobs` | needs a restart |
//! | `[upload]` | needs a restart |

use std::sync::OnceLock;

use crate::config::ServerConfig;

/// What a reload reads: the resolved configuration and log filter.
#[derive(Debug, Clone)]
pub struct Settings {
    pub config: ServerConfig,
    /// The log filter in tracing's env-filter syntax (flag, file, `$RUST_LOG`, `info`).
    pub log_filter: String,
}

type Source = Box<dyn Fn() -> anyhow::Result<Settings> + Send + Sync>;

/// Where the daemon's configuration comes from (one daemon per process, as one SIGHUP).
static SOURCE: OnceLock<Source> = OnceLock::new();

/// Tells the server how to read its configuration again (the daemon's `main`; a server
/// without a source, as in tests, only writes its registry and stats on SIGHUP).
pub fn set_source(source: impl Fn() -> anyhow::Result<Settings> + Send + Sync + 'static) {
    let _ = SOURCE.set(Box::new(source));
}

/// The configuration read again, if the process has a source.
pub fn reread() -> Option<anyhow::Result<Settings>> {
    SOURCE.get().map(|read| read())
}

/// A new configuration against the running one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// The configuration to run with: the new one, with the restart-only settings at
    /// their running values.
    pub config: ServerConfig,
    /// Settings (by their name in the file) that changed and are applied.
    pub applied: Vec<&'static str>,
    /// Settings that changed but need a restart; kept as they run.
    pub needs_restart: Vec<&'static str>,
}

/// Compares `new` with `running` setting by setting ([the table](self)).
pub fn plan(running: &ServerConfig, new: ServerConfig) -> Plan {
    let mut next = new;
    let (mut applied, mut needs_restart) = (Vec::new(), Vec::new());
    macro_rules! live {
        ($($field:ident).+, $name:literal) => {
            if running.$($field).+ != next.$($field).+ {
                applied.push($name);
            }
        };
    }
    macro_rules! restart {
        ($($field:ident).+, $name:literal) => {
            if running.$($field).+ != next.$($field).+ {
                needs_restart.push($name);
                next.$($field).+ = running.$($field).+.clone();
            }
        };
    }
    restart!(listen, "listen");
    restart!(dump_dir, "dir");
    restart!(syslog_listen, "netconsole.listen");
    restart!(syslog_limits, "netconsole.max_clients/max_log_mib");
    restart!(limits.max_clients, "limits.max_clients");
    restart!(limits.max_retired, "limits.max_retired");
    restart!(limits.max_hook_processes, "limits.max_hook_processes");
    restart!(limits.max_queued_jobs, "limits.max_queued_jobs");
    restart!(upload, "upload");
    restart!(log_format, "log_format");
    // Follows `[upload]`, which needs a restart.
    next.retention.keep_until_uploaded = running.retention.keep_until_uploaded;
    live!(session_timeout, "session_timeout");
    live!(after_dump, "after_dump");
    live!(min_free_bytes, "min_free_mib");
    live!(max_sessions, "max_sessions");
    live!(max_memory_dumps, "max_memory_dumps");
    live!(progress_interval, "progress_interval");
    live!(hooks, "hooks");
    live!(retention, "retention");
    live!(dedup, "dedup");
    live!(analysis, "analysis");
    live!(limits.hellos_per_second, "limits.hellos_per_second");
    live!(limits.hellos_per_source_per_second, "limits.hellos_per_source_per_second");
    live!(limits.crashes_per_second, "limits.crashes_per_second");
    live!(limits.max_dump_bytes, "limits.max_dump_gib");
    live!(limits.log_lines_per_second, "limits.log_lines_per_second");
    live!(limits.max_signatures, "limits.max_signatures");
    live!(limits.max_excluded_runs, "limits.max_excluded_runs");
    live!(limits.max_receive_bytes, "limits.max_receive_mib");
    live!(encryption.private_keys, "encryption.private_keys");
    live!(encryption.require_encryption, "encryption.require_encryption");
    Plan { config: next, applied, needs_restart }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;
    use std::time::Duration;

    #[test]
    fn the_same_configuration_changes_nothing() {
        let c = ServerConfig::default();
        assert_eq!(plan(&c, c.clone()), Plan { config: c, applied: vec![], needs_restart: vec![] });
    }

    #[test]
    fn live_settings_are_taken_and_named() {
        let running = ServerConfig::default();
        let mut new = running.clone();
        new.hooks.crash = Some(PathBuf::from("/h/crash"));
        new.retention.max_dumps_per_client = Some(2);
        new.limits.hellos_per_second = 7;
        new.session_timeout = Duration::from_secs(9);
        new.encryption.require_encryption = true;
        let p = plan(&running, new.clone());
        assert_eq!(p.config, new);
        assert_eq!(
            p.applied,
            ["session_timeout", "hooks", "retention", "limits.hellos_per_second", "encryption.require_encryption"]
        );
        assert!(p.needs_restart.is_empty());
    }

    #[test]
    fn restart_only_settings_keep_their_running_value_and_are_named() {
        let running = ServerConfig::default();
        let mut new = running.clone();
        new.listen = "127.0.0.1:7000".parse().unwrap();
        new.dump_dir = PathBuf::from("/elsewhere");
        new.syslog_listen = Some("127.0.0.1:5514".parse().unwrap());
        new.limits.max_hook_processes = 1;
        new.log_format = Some(crate::logging::LogFormat::Json);
        new.max_sessions = 3;
        let p = plan(&running, new);
        assert_eq!(p.needs_restart, ["listen", "dir", "netconsole.listen", "limits.max_hook_processes", "log_format"]);
        assert_eq!(p.config.log_format, None);
        assert_eq!(p.applied, ["max_sessions"]);
        assert_eq!(p.config.listen, running.listen);
        assert_eq!(p.config.dump_dir, running.dump_dir);
        assert_eq!(p.config.syslog_listen, None);
        assert_eq!(p.config.limits.max_hook_processes, running.limits.max_hook_processes);
        assert_eq!(p.config.max_sessions, 3);
    }
}
