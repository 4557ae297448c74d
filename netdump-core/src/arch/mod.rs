//! Architecture support. The only module of netdump-core (with `crash_cell`) where
//! `unsafe` is allowed: register capture, the TSC, port I/O, RDRAND and raw memory reads.

#[cfg(target_arch = "x86_64")]
pub mod x86_64;
