//! What the integrator configures: addresses, name, window and every bound. Shared by
//! the dump client ([`crate::client`], which re-exports it) and netconsole, which takes
//! the client's name and ARP bounds; it needs neither.

use crate::memory::ExcludeSet;
use crate::net::{Ipv4Address, NetConfig};
use crate::proto::{MAX_NAME, valid_name};

/// Every wait of the client has one of these bounds (microseconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// Interval between ARP requests for the next hop (default 200 ms).
    pub arp_retry_us: u64,
    /// ARP requests sent before giving up with `NetError::ArpTimeout` (default 10).
    pub arp_attempts: u32,
    /// Interval between HELLOs at install (default 500 ms).
    pub hello_retry_us: u64,
    /// HELLOs sent before install fails with `InstallError::ServerSilent` (default 6).
    pub hello_attempts: u32,
    /// Interval between CRASH announcements until a DECISION (default 500 ms).
    pub announce_retry_us: u64,
    /// No DECISION for this long ends the dump with one ABORT (default 10 s).
    pub announce_timeout_us: u64,
    /// No ACK progress for this long ends the dump (`DumpError::ServerSilent`).
    pub silence_timeout_us: u64,
    /// Interval between FINISHes until a FINISH_ACK (default 500 ms).
    pub finish_retry_us: u64,
    /// No FINISH_ACK for this long ends the dump with one ABORT (default 10 s).
    pub finish_timeout_us: u64,
    /// While a long run of zero pages sends nothing, a DATA packet of 8 zero bytes from
    /// the run goes out at least this often, so the server does not take the scan for
    /// silence (netdumpd gives up on a session after 60 s without a packet).
    pub keepalive_us: u64,
    /// Retransmission timeout of DATA packets.
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
    /// The timeout before the first round trip is measured (default 200 ms).
    pub initial_us: u64,
    /// Lower clamp of the adaptive timeout (default 20 ms).
    pub min_us: u64,
    /// Upper clamp of the adaptive timeout (default 1 s).
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
    /// The name, or `None` if it is not 1..=64 bytes of `[A-Za-z0-9._-]` beginning with a
    /// letter or digit ([`valid_name`]).
    pub fn new(name: &str) -> Option<Self> {
        if !valid_name(name.as_bytes()) {
            return None;
        }
        let mut bytes = [0; MAX_NAME];
        bytes[..name.len()].copy_from_slice(name.as_bytes());
        Some(ClientName { bytes, len: name.len() })
    }
    /// The name's bytes, as HELLO carries them.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

/// Packets in flight by default: 64 × 1.4 KiB ≈ 92 KiB of window.
pub const DEFAULT_WINDOW: usize = 64;

/// Most dump servers a [`Config`] lists: the first (in [`Config::net`]) and up to three
/// [`fallbacks`](Config::fallbacks).
pub const MAX_SERVERS: usize = 4;

/// A dump server the client may send its dump to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Server {
    /// Its IPv4 address (reached through [`NetConfig::gateway`] when off-link).
    pub ip: Ipv4Address,
    /// Its UDP port.
    pub port: u16,
    /// Its public key (feature `encryption`), as `netdumpd keygen` prints it: as
    /// [`Config::server_key`] is for the first server. `None`: plaintext to this server.
    /// Every listed server has a key or none has: install refuses a mix
    /// ([`InstallError::MixedEncryption`](crate::InstallError::MixedEncryption)), so a
    /// failover never sends in plaintext what a key protects.
    #[cfg(feature = "encryption")]
    pub key: Option<crate::crypto::PublicKey>,
}

impl Server {
    /// A server at `ip:port` (and, with feature `encryption`, no key: plaintext).
    pub const fn new(ip: Ipv4Address, port: u16) -> Self {
        Server {
            ip,
            port,
            #[cfg(feature = "encryption")]
            key: None,
        }
    }
}

/// The client's configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Config {
    /// Addresses and ports of the client and its server.
    pub net: NetConfig,
    /// The name the server files this client's dumps under.
    pub name: ClientName,
    /// Largest number of DATA packets in flight (bounded by the slots provided).
    pub window: usize,
    /// The bound on every wait.
    pub timeouts: Timeouts,
    /// The page classes the dump leaves out (makedumpfile's `-d` levels, see
    /// [`ExcludeSet`]), asked of the memory source's
    /// [`classify`](crate::memory::MemorySource::classify). Filtering needs a server that
    /// grants the `FILTER` feature (it records the excluded ranges, so that a reader
    /// tells them from zero pages); with one that does not, the dump sends every page.
    /// Default [`ExcludeSet::NONE`].
    pub exclude: ExcludeSet,
    /// The dump server's public key (feature `encryption`), as `netdumpd keygen` prints
    /// it: with a key the client encrypts every packet after a Noise handshake at install
    /// and never falls back to plaintext; install fails with
    /// [`InstallError::ServerKeyMismatch`](crate::InstallError::ServerKeyMismatch) when the
    /// server cannot prove it holds the key, [`InstallError::Insecure`](crate::InstallError::Insecure)
    /// when it would register the client only in plaintext. `None`: plaintext.
    #[cfg(feature = "encryption")]
    pub server_key: Option<crate::crypto::PublicKey>,
    /// The servers to fail over to, in order, after the first ([`NetConfig::server_ip`]
    /// and [`NetConfig::server_port`], with [`server_key`](Self::server_key)); `None`s are
    /// skipped. Default: none, one server, and the client behaves exactly as one
    /// without failover (it does not even ask for [`features::FAILOVER`]).
    /// [`add_server`](Self::add_server) fills the first free entry.
    ///
    /// [`features::FAILOVER`]: crate::proto::features::FAILOVER
    pub fallbacks: [Option<Server>; MAX_SERVERS - 1],
}

impl Config {
    /// A configuration with the default window and timeouts (and, with feature
    /// `encryption`, no server key: plaintext); change the fields that differ.
    pub fn new(net: NetConfig, name: ClientName) -> Self {
        Config {
            net,
            name,
            window: DEFAULT_WINDOW,
            timeouts: Timeouts::default(),
            exclude: ExcludeSet::NONE,
            #[cfg(feature = "encryption")]
            server_key: None,
            fallbacks: [None; MAX_SERVERS - 1],
        }
    }

    /// Appends `server` to the servers tried after the first; false (and nothing
    /// changed) when [`MAX_SERVERS`] are listed already.
    pub fn add_server(&mut self, server: Server) -> bool {
        match self.fallbacks.iter_mut().find(|s| s.is_none()) {
            Some(free) => {
                *free = Some(server);
                true
            }
            None => false,
        }
    }

    /// The first server: [`NetConfig::server_ip`], [`NetConfig::server_port`] and
    /// [`server_key`](Self::server_key).
    pub fn first_server(&self) -> Server {
        Server {
            ip: self.net.server_ip,
            port: self.net.server_port,
            #[cfg(feature = "encryption")]
            key: self.server_key,
        }
    }

    /// The `index`th server in the order they are tried (0: the first), if listed.
    pub fn server(&self, index: usize) -> Option<Server> {
        match index {
            0 => Some(self.first_server()),
            _ => self.fallbacks.iter().flatten().nth(index - 1).copied(),
        }
    }

    /// How many servers are listed: 1..=[`MAX_SERVERS`].
    pub fn server_count(&self) -> usize {
        1 + self.fallbacks.iter().flatten().count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn servers_are_the_first_then_the_fallbacks_in_order() {
        let net = NetConfig {
            ip: Ipv4Address::new(10, 0, 2, 15),
            prefix_len: 24,
            gateway: Some(Ipv4Address::new(10, 0, 2, 2)),
            server_ip: Ipv4Address::new(10, 0, 2, 2),
            server_port: 6666,
            client_port: 6665,
        };
        let mut c = Config::new(net, ClientName::new("a").unwrap());
        assert_eq!(c.server_count(), 1);
        assert_eq!(c.server(0).map(|s| (s.ip, s.port)), Some((net.server_ip, 6666)));
        assert_eq!(c.server(1), None);
        for port in [1, 2, 3] {
            assert!(c.add_server(Server::new(Ipv4Address::new(192, 0, 2, port as u8), port)));
        }
        assert!(!c.add_server(Server::new(Ipv4Address::new(192, 0, 2, 9), 9)), "a fifth server");
        assert_eq!(c.server_count(), MAX_SERVERS);
        c.fallbacks[0] = None;
        assert_eq!(c.server_count(), 3);
        assert_eq!(c.server(1).map(|s| s.port), Some(2));
        assert_eq!(c.server(2).map(|s| s.port), Some(3));
        assert_eq!(c.server(3), None);
    }
}
