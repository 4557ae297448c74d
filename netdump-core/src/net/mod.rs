//! The minimal ARP/IPv4/UDP subset the dump path speaks, on `smoltcp::wire`'s packet
//! accessors and address types.
//!
//! It answers ARP for its own address, resolves the next hop towards the server once at
//! install time and never relearns it (the spoof guard of the original netdump), and
//! accepts only UDP from the server's address and port, carried by the cached MAC, to
//! its own address and port. Everything else is ignored and counted.

pub(crate) mod frame;
mod link;

pub use frame::{
    FRAME_OVERHEAD, Ignored, Inbound, UdpChecksum, UdpFlow, classify, emit_arp, emit_udp, emit_udp_with,
    internet_checksum,
};
pub use link::{LinkCounters, NetConfig, NetError, UdpLink};
pub use smoltcp::wire::{EthernetAddress, Ipv4Address};
