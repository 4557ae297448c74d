//! Measurement modes for `cargo xtask bench`.
//!
//! `raw-tx`: the raw limit of the NIC and driver. The kernel sends `frames=` UDP
//! datagrams of exactly the dump's packet size (a full DATA packet: 1472 bytes of UDP
//! payload) to `raw_port=` on the server's host, unacknowledged, as fast as the driver takes them; each
//! carries its sequence number so the host can count what arrived.

use netdump_core::Netdump;
use netdump_core::clock::Clock;
use netdump_core::crash_cell::CrashCell;
use netdump_core::net::{EthernetAddress, FRAME_OVERHEAD, UdpChecksum, UdpFlow, emit_udp_with};
use netdump_core::nic::PolledNic;
use netdump_qemu_runtime::{EXIT_FAILURE, EXIT_SUCCESS, println, qemu_exit};

/// UDP payload of a full DATA packet on a 1500-byte MTU.
pub const RAW_PAYLOAD: usize = 1500 - 20 - 8;

/// From the client's address and port to the host's `raw_port=`, through the server's
/// (gateway's) MAC; `None` before install resolved it.
fn raw_flow<N: PolledNic, C: Clock>(nd: &mut Netdump<N, C>, s: &crate::scenario::Scenario) -> Option<UdpFlow> {
    Some(UdpFlow {
        src_mac: EthernetAddress(nd.nic().mac_address()),
        dst_mac: nd.link().peer_mac()?,
        src_ip: s.client_ip,
        dst_ip: s.server_ip,
        src_port: netdump_core::proto::CLIENT_PORT,
        dst_port: s.raw_port,
    })
}

pub fn raw_tx<N: PolledNic, C: Clock>(
    cell: &CrashCell<Netdump<N, C>>,
    s: &crate::scenario::Scenario,
    frames: u32,
) -> ! {
    let done = cell.try_with(|nd| {
        let flow = raw_flow(nd, s)?;
        let checksum = UdpChecksum::of(nd.nic());
        let start = nd.clock().now_us();
        let mut sent = 0u32;
        let mut full = 0u64;
        while sent < frames {
            let r = nd.nic().transmit(FRAME_OVERHEAD + RAW_PAYLOAD, &mut |f| {
                emit_udp_with(f, &flow, RAW_PAYLOAD, checksum, |p| {
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

/// `costs`: what each step of a DATA packet's way out costs on this CPU (under TCG, in
/// emulation), timed over `ROUNDS` repetitions each, for the bench report. One line:
/// `costs: <step>=<ns per packet> ...`.
pub fn costs<N: PolledNic, C: Clock + Copy>(
    cell: &CrashCell<Netdump<N, C>>,
    s: &crate::scenario::Scenario,
    memory: &dyn netdump_core::memory::MemorySource,
) -> ! {
    use core::hint::black_box;
    use netdump_core::client::SLOT_PAYLOAD;
    const ROUNDS: u64 = 4000;
    static mut PAGE: [u8; 4096] = [0; 4096];
    static mut SLOT: [u8; SLOT_PAYLOAD] = [0; SLOT_PAYLOAD];
    // SAFETY: single CPU, used by this function only, never re-entered.
    let (page, slot) = unsafe { (&mut *(&raw mut PAGE), &mut *(&raw mut SLOT)) };
    let done = cell.try_with(|nd| {
        let flow = raw_flow(nd, s)?;
        let clock = *nd.clock();
        let time = |f: &mut dyn FnMut(u64)| {
            let start = clock.now_us();
            for i in 0..ROUNDS {
                f(i);
            }
            (clock.now_us() - start) * 1000 / ROUNDS
        };
        let phys = s.pattern.base;
        // Reading a page of the pattern (the dump reads each page once; per packet, 0.35 of it).
        let read_page = time(&mut |i| {
            let _ = memory.read(phys + (i % 256) * 4096, page);
            black_box(&page);
        });
        // The dump's zero check in place, on a page of data (it stops at the first
        // non-zero step) and on a zero page (it reads the whole page).
        let zero_check = time(&mut |_| {
            // SAFETY: `page` is a readable 4096-byte buffer.
            black_box(unsafe { netdump_core::arch::x86_64::is_zero_forward(black_box(page.as_ptr()), 4096) });
        });
        static ZERO_PAGE: [u8; 4096] = [0; 4096];
        let zero_page = time(&mut |_| {
            // SAFETY: a readable 4096-byte static.
            black_box(unsafe { netdump_core::arch::x86_64::is_zero_forward(black_box(ZERO_PAGE.as_ptr()), 4096) });
        });
        let copy = time(&mut |i| {
            let from = (i as usize % 2) * 1024;
            slot[..1432].copy_from_slice(&page[from..from + 1432]);
            black_box(&slot);
        });
        let crc = time(&mut |_| {
            black_box(crc32fast::hash(black_box(&slot[..1432])));
        });
        // The cheaper check a server may grant (feature XXH64_CHECK).
        let xxh64 = time(&mut |_| {
            black_box(netdump_core::proto::Check::Xxh64.of(black_box(&slot[..1432])));
        });
        // Sealing a DATA payload in an encrypted session: ChaCha20-Poly1305 over 1432
        // bytes with the 24-byte header as associated data.
        let mut transport = netdump_core::crypto::Transport::from_keys([7; 32], [9; 32], 0);
        let header = [0x4e_u8; 24];
        let aead = time(&mut |_| {
            black_box(transport.seal(&header, black_box(&mut slot[..1432])).ok());
        });
        let mut frame = [0u8; FRAME_OVERHEAD + RAW_PAYLOAD];
        let udp = time(&mut |_| {
            emit_udp_with(&mut frame, &flow, RAW_PAYLOAD, UdpChecksum::Software, |_| ());
            black_box(&frame);
        });
        let udp_offloaded = time(&mut |_| {
            emit_udp_with(&mut frame, &flow, RAW_PAYLOAD, UdpChecksum::Device, |_| ());
            black_box(&frame);
        });
        // The driver, the device and the host network: a whole valid datagram (to
        // `raw_port`) copied into the NIC's buffer and handed over.
        let checksum = UdpChecksum::of(nd.nic());
        emit_udp_with(&mut frame, &flow, RAW_PAYLOAD, checksum, |p| p.fill(0x5a));
        let mut transmit = || loop {
            match nd.nic().transmit(FRAME_OVERHEAD + RAW_PAYLOAD, &mut |f| {
                f.copy_from_slice(&frame);
            }) {
                Ok(()) => break,
                Err(_) => {
                    nd.nic().poll_transmit();
                }
            }
        };
        let nic = time(&mut |_| transmit());
        Some([
            ("read_page", read_page),
            ("zero_check_page", zero_check),
            ("zero_page_scan", zero_page),
            ("copy_1432", copy),
            ("crc32_1432", crc),
            ("xxh64_1432", xxh64),
            ("aead_seal_1432", aead),
            ("udp_emit_1472", udp),
            ("udp_emit_offloaded", udp_offloaded),
            ("nic_transmit", nic),
        ])
    });
    match done.flatten() {
        Some(costs) => {
            let mut line = netdump_core::text::TextBuf::<352>::new();
            for (name, ns) in costs {
                let _ = core::fmt::Write::write_fmt(&mut line, format_args!(" {name}={ns}"));
            }
            println!("costs:{}", core::str::from_utf8(line.as_bytes()).unwrap_or("?"));
            qemu_exit(EXIT_SUCCESS)
        }
        None => {
            println!("costs: netdump not installed or no server MAC");
            qemu_exit(EXIT_FAILURE)
        }
    }
}
