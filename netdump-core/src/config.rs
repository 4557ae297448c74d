//! What the integrator configures: addresses, name, window and every bound. Shared by
//! the dump client ([`crate::client`], which re-exports it) and netconsole, which takes
//! the client's name and ARP bounds; it needs neither.

use crate::net::NetConfig;
use crate::proto::{valid_name, MAX_NAME};

/// Every wait of the client has one of these bounds (microseconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    pub arp_retry_us: u64,
    pub arp_attempts: u32,
    pub hello_retry_us: u64,
    pub hello_attempts: u32,
    pub announce_retry_us: u64,
    pub announce_timeout_us: u64,
    /// No ACK progress for this long ends the dump (`DumpError::ServerSilent`).
    pub silence_timeout_us: u64,
    pub finish_retry_us: u64,
    pub finish_timeout_us: u64,
    /// While a long run of zero pages sends nothing, a DATA packet of 8 zero bytes from
    /// the run goes out at least this often, so the server does not take the scan for
    /// silence (netdumpd gives up on a session after 60 s without a packet).
    pub keepalive_us: u64,
    pub rto: RtoBounds,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            arp_retry_us: 200_000,
            arp_attempts: 10,
            hello_retry_us: 500_000,
            hello_attempts: 6,
            announce_retry_us: 500_000,
            announce_timeout_us: 10_000_000,
            silence_timeout_us: 10_000_000,
            finish_retry_us: 500_000,
            finish_timeout_us: 10_000_000,
            keepalive_us: 1_000_000,
            rto: Default::default(),
        }
    }
}

/// Retransmission timing (RFC 6298 style, in microseconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtoBounds {
    pub initial_us: u64,
    pub min_us: u64,
    pub max_us: u64,
}

impl Default for RtoBounds {
    fn default() -> Self {
        RtoBounds { initial_us: 200_000, min_us: 20_000, max_us: 1_000_000 }
    }
}

/// A client name: 1..=64 bytes of `[A-Za-z0-9._-]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientName {
    bytes: [u8; MAX_NAME],
    len: usize,
}

impl ClientName {
    pub fn new(name: &str) -> Option<Self> {
        if !valid_name(name.as_bytes()) {
            return None;
        }
        let mut bytes = [0; MAX_NAME];
        bytes[..name.len()].copy_from_slice(name.as_bytes());
        Some(ClientName { bytes, len: name.len() })
    }
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

/// Packets in flight by default: 64 × 1.4 KiB ≈ 92 KiB of window.
pub const DEFAULT_WINDOW: usize = 64;

/// The client's configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Config {
    pub net: NetConfig,
    pub name: ClientName,
    /// Largest number of DATA packets in flight (bounded by the slots provided).
    pub window: usize,
    pub timeouts: Timeouts,
}
