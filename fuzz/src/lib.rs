//! Fuzz targets for the two parsers that face the network:
//!
//! - [`server_packets`]: netdumpd's packet decoding, dispatch by cookie, registry and
//!   session state machine, fed datagrams from four source addresses;
//! - [`server_packets_sealed`]: the same with a server holding a key and three clients
//!   registered encrypted: its encrypted receive path (opening, replay window, drops);
//! - [`client_receive`]: the crashing kernel's receive path (Ethernet, ARP, IPv4, UDP
//!   classification, the protocol's parsing, the client's handling of what passes) while
//!   the real client installs and dumps against a well-behaved server, with the fuzzer's
//!   frames slipped in between;
//! - [`client_receive_sealed`]: the same with the client pinning the server's key: its
//!   encrypted receive path (sealed packets opened, replays and forgeries refused);
//! - [`syslog_datagrams`]: netdumpd's netconsole receiver (syslog parsing, client
//!   attribution and limits, console log writing), fed datagrams from four addresses;
//! - [`lz4_blocks`]: netdumpd's decoding of compressed DATA blocks (bounds, lengths),
//!   and the client's LZ4 encoder against it.
//!
//! Each target is a function of the input bytes that must not panic, hang, or break the
//! invariants it checks. `fuzz/libfuzzer` runs them under libFuzzer (cargo-fuzz, nightly);
//! `cargo test` replays every file of `fuzz/corpus/<target>/` and
//! `fuzz/regressions/<target>/` through them on stable. README.md says how to fuzz.

mod client;
mod input;
mod lz4;
mod scratch;
mod server;
mod syslog;

pub use client::{client_receive, client_receive_sealed};
pub use input::{Records, encode, seal};
pub use lz4::lz4_blocks;
pub use server::{server_packets, server_packets_sealed};
pub use syslog::syslog_datagrams;

/// A target: its name (its corpus directory's) and its function.
pub type Target = (&'static str, fn(&[u8]));

/// The targets by name (the corpus directories' names), for the replay test.
pub const TARGETS: [Target; 6] = [
    ("server_packets", server_packets),
    ("server_packets_sealed", server_packets_sealed),
    ("client_receive", client_receive),
    ("client_receive_sealed", client_receive_sealed),
    ("syslog_datagrams", syslog_datagrams),
    ("lz4_blocks", lz4_blocks),
];

/// Seed inputs of each target: well-formed exchanges the fuzzer starts from.
pub fn seeds(target: &str) -> Vec<(&'static str, Vec<u8>)> {
    match target {
        "server_packets" => server::seeds(),
        "server_packets_sealed" => server::seeds_sealed(),
        "client_receive" => client::seeds(),
        "client_receive_sealed" => client::seeds_sealed(),
        "syslog_datagrams" => syslog::seeds(),
        "lz4_blocks" => lz4::seeds(),
        _ => Vec::new(),
    }
}
