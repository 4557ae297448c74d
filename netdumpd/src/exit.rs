//! The exit statuses of the daemon and its commands (listed for `--help` and the manual
//! page in `DAEMON_SECTIONS` of the `cli` module).

/// Success (`check-config`: nothing wrong).
pub const OK: u8 = 0;
/// A failure while running: the socket cannot be bound, a file cannot be written,
/// `check-config` found a problem, `show` found no such dump.
pub const FAILURE: u8 = 1;
/// A usage error: an unknown flag or subcommand, a bad value (clap's status).
pub const USAGE: u8 = 2;
/// The configuration is wrong: the file cannot be read or parsed, a value is out of
/// range, a private key does not load (sysexits(3) `EX_CONFIG`).
pub const CONFIG: u8 = 78;
/// A second SIGINT or SIGTERM ended the shutdown at once.
pub const FORCED: u8 = 130;
