//! Measurement modes for `cargo xtask bench`.
//!
//! `raw-tx`: the raw limit of the NIC and driver. The kernel sends `frames=` UDP
//! datagrams of exactly the dump's packet size (a full DATA packet: 1472 bytes of UDP
//! payload) to `raw_port=` on the server's host, unacknowledged, as fast as the driver takes them; each
//! carries its sequence number so the host can count what arrived.

use netdump_core::clock::Clock;
use netdump_core::crash_cell::CrashCell;
use netdump_core::net::{emit_udp, EthernetAddress, UdpFlow, FRAME_OVERHEAD};
use netdump_core::nic::PolledNic;
use netdump_core::Netdump;
use netdump_qemu_runtime::{println, qemu_exit, EXIT_FAILURE, EXIT_SUCCESS};

/// UDP payload of a full DATA packet on a 1500-byte MTU.
pub const RAW_PAYLOAD: usize = 1500 - 20 - 8;

pub fn raw_tx<N: PolledNic, C: Clock>(cell: &CrashCell<Netdump<N, C>>, s: &crate::scenario::Scenario, frames: u32) -> ! {
    let done = cell.try_with(|nd| {
        let server_mac = nd.link().peer_mac()?;
        let flow = UdpFlow {
            src_mac: EthernetAddress(nd.nic().mac_address()),
            dst_mac: server_mac,
            src_ip: s.client_ip,
            dst_ip: s.server_ip,
            src_port: netdump_core::proto::CLIENT_PORT,
            dst_port: s.raw_port,
        };
        let start = nd.clock().now_us();
        let mut sent = 0u32;
        let mut full = 0u64;
        while sent < frames {
            let r = nd.nic().transmit(FRAME_OVERHEAD + RAW_PAYLOAD, &mut |f| {
                emit_udp(f, &flow, RAW_PAYLOAD, |p| {
                    p[..4].copy_from_slice(b"NDRT");
                    p[4..8].copy_from_slice(&sent.to_be_bytes());
                    p[8..12].copy_from_slice(&frames.to_be_bytes());
                })
            });
            match r {
                Ok(()) => sent += 1,
                Err(_) => {
                    full += 1;
                    nd.nic().poll_transmit();
                }
            }
        }
        Some((nd.clock().now_us() - start, full))
    });
    match done.flatten() {
        Some((us, full)) => {
            println!("raw-tx: {frames} frames of {RAW_PAYLOAD} bytes in {us} us ({full} ring-full retries)");
            qemu_exit(EXIT_SUCCESS)
        }
        None => {
            println!("raw-tx: netdump not installed or no server MAC");
            qemu_exit(EXIT_FAILURE)
        }
    }
}
