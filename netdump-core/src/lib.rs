//! netdump-core: network crash dumps for Rust kernels, `no_std` and without `alloc`.
//!
//! A kernel installs netdump at boot ([`Netdump::install`]) with a [`nic::PolledNic`]
//! driver, keeps it in a [`CrashCell`], and from its panic and fatal-exception handlers
//! seizes it and calls [`Netdump::dump`].
//!
//! Layout: [`nic`] (the driver contract), [`net`] (ARP/IPv4/UDP on `smoltcp::wire`),
//! [`proto`] (the wire protocol, shared with netdumpd), [`client`] (install and dump state
//! machines, the SACK window), [`config`] (what the integrator configures, shared by the
//! client and netconsole), [`cpus`] (the crash election and every other CPU stopped by
//! NMI, their registers in the dump), [`log`] (console ring), [`netconsole`] (console lines as UDP
//! syslog), [`civil`] (the UTC calendar), `crypto` (feature `encryption`: the Noise
//! handshake and per-packet AEAD of encrypted dumps), [`memory`], [`clock`], and
//! [`arch`] (x86_64 register capture, TSC clock, RDRAND). `unsafe` is denied here and
//! allowed only in `arch` and [`crash_cell`].
#![cfg_attr(not(any(test, feature = "host")), no_std)]
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod arch;
pub mod civil;
pub mod client;
pub mod clock;
pub mod config;
pub mod cpus;
pub mod crash_cell;
#[cfg(feature = "encryption")]
pub mod crypto;
#[cfg(feature = "host")]
pub mod host;
pub mod log;
pub mod memory;
pub mod net;
#[cfg(feature = "netconsole")]
pub mod netconsole;
pub mod nic;
pub mod proto;
pub mod text;

pub use client::{CrashBuffers, CrashInfo, DumpError, DumpReport, InstallError, InstallFailure, Netdump};
pub use crash_cell::CrashCell;
