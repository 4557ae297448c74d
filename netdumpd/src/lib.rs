//! netdumpd, the netdump server: receives crash dumps over UDP (docs/PROTOCOL.md) and
//! writes a vmcore, the console log and `info.json` per crash.
//!
//! The daemon is `main.rs`; this library is everything else, so that tests can run a
//! [`Server`] in a thread:
//!
//! ```no_run
//! use netdumpd::{Server, ServerConfig};
//! let config = ServerConfig { listen: "127.0.0.1:0".parse()?, dump_dir: "./crash".into(), ..Default::default() };
//! let server = Server::bind(config)?;
//! let (addr, stop) = (server.local_addr(), server.shutdown_handle());
//! let thread = std::thread::spawn(move || server.run());
//! // … send packets to `addr` …
//! stop.shutdown();
//! thread.join().unwrap()?;
//! # Ok::<(), anyhow::Error>(())
//! ```
//!
//! | module | what |
//! |---|---|
//! | [`cli`] | command-line options |
//! | [`server`] | the loop: dispatch by cookie, ACK policy, decisions |
//! | [`outbox`] | the socket: bounded waits, sending, the budget of unsolicited replies |
//! | [`announcement`] | a crash announcement, owned |
//! | [`session`] | one dump: state machine, positioned writes, FINISH verification |
//! | [`blocks`] | compressed DATA: the LZ4 decoder and its checks |
//! | [`receive_window`] | cumulative/selective ack and the stream CRC by CRC-32 combine |
//! | [`recovery`] | dumps an earlier netdumpd left receiving, marked incomplete at start-up |
//! | [`registry`] | registered clients, `clients.json` |
//! | [`channel`] | a cookie's encrypted channel: the Noise handshake's responder, keys, nonces |
//! | [`keys`] | the server's private keys, `netdumpd keygen` |
//! | [`vmcore`] | the ELF core layout and notes |
//! | [`dumpdir`] | a crash's directory and files, free space |
//! | [`files`] | private files and directories, atomic replacement |
//! | [`info`] | `info.json` |
//! | [`stats`] | drop counters, rate-limited warnings, `stats.json` |
//! | [`limits`] | the bounds on what strangers can make the server hold, rate budgets |
//! | [`budget`] | the memory a dump reserves, and the bound on the server's memory |
//! | [`jobs`] | the bounded pool that runs hooks, analysis and retention after dumps |
//! | [`logging`] | the server log (stderr text or JSON, or the journal) and its line budget |
//! | [`notify`] | readiness and state for systemd (`Type=notify`) |
//! | [`reload`] | SIGHUP: the configuration read again, what applies without a restart |
//! | [`config`] | the TOML configuration file, merged with the flags |
//! | [`admission`] | a crash's way to its DECISION: dedup, hooks, memory-dump limit, space |
//! | [`hooks`] | hook scripts, run with a bound |
//! | [`dedup`] | crash signatures and repeated crashes |
//! | [`analysis`] | the backtrace by gdb into `analysis.txt` |
//! | [`retention`] | limits on the dumps kept, `last` links |
//! | [`catalog`] | the dumps on disk |
//! | [`admin`] | `netdumpd list`, `show`, `check-config` |
//! | [`progress`] | progress of a dump in the server log |
//! | [`syslog`] | netconsole lines received as syslog, appended to each client's console log |
//! | [`upload`] | finished dumps shipped to S3-compatible object storage, and read back |

pub mod admin;
pub mod admission;
pub mod analysis;
pub mod announcement;
pub mod blocks;
pub mod budget;
pub mod catalog;
pub mod channel;
pub mod cli;
pub mod config;
pub mod dedup;
pub mod dumpdir;
pub mod exit;
pub mod files;
pub mod hooks;
pub mod info;
pub mod jobs;
pub mod keys;
pub mod limits;
pub mod logging;
pub mod notify;
pub mod outbox;
pub mod progress;
pub mod receive_window;
pub mod recovery;
pub mod registry;
pub mod reload;
pub mod retention;
pub mod server;
pub mod session;
pub mod signals;
pub mod stats;
pub mod syslog;
pub mod upload;
pub mod utc;
pub mod vmcore;

pub use config::ServerConfig;
pub use server::{Server, ShutdownHandle};
pub use stats::{DropReason, ServerStats, StatsSnapshot};

#[cfg(test)]
mod test_dir;

#[cfg(test)]
#[path = "../tests/common/core_reader.rs"]
mod core_reader;
