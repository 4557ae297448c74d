//! Host side of netdump's QEMU test suite: boots the test kernels, runs a real netdumpd
//! per scenario, and checks what arrived on the server — the vmcore bit by bit against
//! the pattern, gdb's view of it, `log` and `info.json`.

pub mod bench;
pub mod capture;
pub mod check;
pub mod conformance;
pub mod flood;
pub mod forgery;
pub mod gdb;
pub mod host_client;
pub mod netdumpd;
pub mod proxy;
pub mod qemu;
pub mod rate_limit;
pub mod replayer;
pub mod s3;
pub mod scenarios;
pub mod suite;
pub mod tools;
pub mod vmcore;
