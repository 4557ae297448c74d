//! Architecture support. The only module of netdump-core (with `crash_cell`) where
//! `unsafe` is allowed: register capture, the TSC, port I/O, RDRAND and raw memory reads.
//!
//! [`x86_64`] is there on every target, with only its vocabulary (exception vectors,
//! page-fault error codes) outside x86_64: netdumpd names a dump's exception on any host.

pub mod x86_64;
