//! The NIC conformance kernel: runs the e1000 driver through the `PolledNic` contract on
//! QEMU's user network (`-netdev user -device e1000`), printing one `CHECK <name>: PASS|FAIL`
//! line per check and exiting through isa-debug-exit (33 = every check passed).
//!
//! Command line: `port=<udp port>` (required; UDP frames go to 10.0.2.2:<port>, i.e. the
//! host's 127.0.0.1:<port>) and `frames=<n>` (default 5000).
//!
//! Every UDP payload starts with a 16-byte header: magic `NDNC` ([`TAG`]), phase (1 flood,
//! 2 after the takeover reset, 3 between repeated resets, 4 the largest frame, 9 frames
//! queued before the takeover), 3 zero bytes, the sequence number within the phase and the
//! number of frames the phase sends (u32 big-endian each; 0 when not known up front). A host
//! listener counts them (`qemu-tests/harness/src/conformance.rs`).
//!
//! The checks are written against [`PolledNic`] plus the few hooks of [`DeviceUnderTest`];
//! `nic.rs` brings up the e1000 and implements them. Another driver needs only its own
//! bring-up module.
#![no_std]
#![no_main]
// Check outcomes are fixed-size text on the stack (no allocator); their size is fine here.
#![allow(clippy::result_large_err)]

use netdump_core::text::TextBuf;

/// A check's outcome text, formatted without an allocator.
pub type Note = TextBuf<240>;

macro_rules! note {
    ($($arg:tt)*) => {{
        let mut n = $crate::Note::new();
        let _ = core::fmt::Write::write_fmt(&mut n, format_args!($($arg)*));
        n
    }};
}

mod frames;
mod nic;

use netdump_core::arch::x86_64::TscClock;
use netdump_core::clock::{Clock, Deadline};
use netdump_core::nic::{NicError, PolledNic};
use netdump_qemu_runtime::{BootInfo, EXIT_FAILURE, EXIT_SUCCESS, println, qemu_exit};
use smoltcp::wire::{EthernetAddress, Ipv4Address};

use frames::{ARP_FRAME_LEN, MAX_UDP_PAYLOAD, UdpFlow, udp_frame_len};

/// What the checks need beyond [`PolledNic`]; each driver's bring-up implements it.
pub trait DeviceUnderTest: PolledNic {
    /// Whether the device may master the bus (do DMA).
    fn bus_master_enabled(&mut self) -> bool;
    fn link_up(&mut self) -> bool;
    /// Frames handed to the device and not yet reclaimed.
    fn tx_in_flight(&self) -> usize;
    /// Leaves the device as a dying OS driver might: interrupts unmasked, filters opened,
    /// ring registers moved, DMA off.
    fn leave_dirty(&mut self);
    /// Checks that `reset` undid everything `leave_dirty` did.
    fn check_clean(&mut self) -> Result<(), Note>;
}

const GUEST_IP: Ipv4Address = Ipv4Address::new(10, 0, 2, 15);
const GATEWAY_IP: Ipv4Address = Ipv4Address::new(10, 0, 2, 2);
const SOURCE_PORT: u16 = 40_000;
/// Payload header of every UDP frame sent (see the crate documentation).
const TAG: &[u8; 4] = b"NDNC";
const TAG_LEN: usize = 16;
/// UDP payload sizes the flood cycles through: a frame the driver must pad (58 bytes),
/// mid sizes, and the largest frame (1514 bytes).
const PAYLOAD_SIZES: [usize; 4] = [TAG_LEN, 300, 1000, MAX_UDP_PAYLOAD];
/// ARP: retransmit every 200 ms, give up after 5 s (QEMU's e1000 holds received frames
/// back for up to a second after every RCTL write).
const ARP_RETRY_US: u64 = 200_000;
const ARP_TIMEOUT_US: u64 = 5_000_000;
/// How long a full transmit ring may take to free a descriptor.
const RECLAIM_TIMEOUT_US: u64 = 100_000;

#[derive(Default)]
struct Report {
    passed: u32,
    failed: u32,
}

impl Report {
    fn check(&mut self, name: &str, outcome: Result<Note, Note>) -> bool {
        match outcome {
            Ok(note) => {
                self.passed += 1;
                println!("CHECK {name}: PASS {}", note.as_str());
                true
            }
            Err(note) => {
                self.failed += 1;
                println!("CHECK {name}: FAIL {}", note.as_str());
                false
            }
        }
    }

    fn finish(&self) -> ! {
        if self.failed == 0 {
            println!("RESULT: PASS ({} checks)", self.passed);
            qemu_exit(EXIT_SUCCESS)
        } else {
            println!(
                "RESULT: FAIL ({} of {} checks failed)",
                self.failed,
                self.passed + self.failed
            );
            qemu_exit(EXIT_FAILURE)
        }
    }
}

netdump_qemu_runtime::entry!(kernel_main);

fn kernel_main(boot: &'static BootInfo) -> ! {
    println!("netdump NIC conformance: {}", boot.cmdline);
    let args = boot.args();
    let Some(port) = args
        .get_u64("port")
        .and_then(|p| u16::try_from(p).ok())
        .filter(|&p| p != 0)
    else {
        println!("usage: -append \"port=<udp port> [frames=<n>]\"");
        qemu_exit(EXIT_FAILURE)
    };
    let flood_frames = args.get_u64("frames").map_or(5000, |n| n as u32);
    let clock = TscClock::calibrate();
    println!(
        "clock: {} TSC ticks/us (calibrated: {})",
        clock.ticks_per_us(),
        clock.calibrated
    );
    let mut report = Report::default();

    let (mut nic, found) = match nic::bring_up() {
        Ok(up) => up,
        Err(e) => {
            report.check("pci-discovery", Err(note!("{e}")));
            report.finish()
        }
    };
    let mac = EthernetAddress(nic.mac_address());
    report.check(
        "pci-discovery",
        Ok(note!(
            "{:04x}:{:04x} at {}, BAR0 {:#x} ({} KiB), firmware command {:#06x} (bus master {}), MAC {}",
            found.vendor_id,
            found.device_id,
            found.address,
            found.bar0,
            found.bar0_size / 1024,
            found.command.bits(),
            if found.command.contains(netdump_pci::Command::BUS_MASTER) { "on" } else { "off" },
            mac
        )),
    );

    let started = clock.now_us();
    let reset = nic.reset();
    let took = clock.now_us() - started;
    let bus_master = nic.bus_master_enabled();
    let link = nic.link_up();
    let ok = report.check(
        "reset",
        match reset {
            Ok(()) if bus_master && link => Ok(note!("in {took} us; bus mastering on, link up")),
            Ok(()) => Err(note!(
                "returned Ok but bus master {bus_master}, link {link}"
            )),
            Err(e) => Err(note!("{e}")),
        },
    );
    if !ok {
        report.finish();
    }

    let gateway = match arp_round_trip(&mut nic, &clock, mac) {
        Ok(reply) => {
            report.check(
                "arp-round-trip",
                Ok(note!(
                    "{GATEWAY_IP} is at {} ({} us after the first request, {} requests, {} other frames)",
                    reply.mac,
                    reply.after_us,
                    reply.requests,
                    reply.other_frames
                )),
            );
            reply.mac
        }
        Err(e) => {
            report.check("arp-round-trip", Err(e));
            report.finish()
        }
    };

    let flow = UdpFlow {
        src_mac: mac,
        dst_mac: gateway,
        src_ip: GUEST_IP,
        dst_ip: GATEWAY_IP,
        src_port: SOURCE_PORT,
        dst_port: port,
    };
    report.check(
        "udp-flood",
        udp_flood(&mut nic, &clock, &flow, flood_frames),
    );
    report.check("frame-length-limits", frame_length_limits(&mut nic, &flow));
    report.check("takeover-reset", takeover(&mut nic, &clock, &flow, gateway));
    report.check(
        "repeated-reset",
        repeated_reset(&mut nic, &clock, &flow, gateway),
    );
    report.finish()
}

struct ArpReply {
    mac: EthernetAddress,
    after_us: u64,
    requests: u32,
    other_frames: u32,
}

/// Asks who has 10.0.2.2 until the reply comes or the timeout passes.
fn arp_round_trip(
    nic: &mut impl DeviceUnderTest,
    clock: &TscClock,
    mac: EthernetAddress,
) -> Result<ArpReply, Note> {
    let started = clock.now_us();
    let give_up = Deadline::after(clock, ARP_TIMEOUT_US);
    let mut requests = 0;
    let mut other_frames = 0;
    loop {
        match nic.transmit(ARP_FRAME_LEN, &mut |frame| {
            frames::arp_request(frame, mac, GUEST_IP, GATEWAY_IP)
        }) {
            Ok(()) => requests += 1,
            Err(NicError::RingFull) => {}
            Err(e) => return Err(note!("ARP request not sent: {e}")),
        }
        let retry = Deadline::after(clock, ARP_RETRY_US);
        while !retry.passed(clock) {
            nic.poll_transmit();
            let mut answer = None;
            let polled = nic
                .poll_receive(&mut |frame| {
                    answer = frames::arp_reply_from(frame, mac, GUEST_IP, GATEWAY_IP)
                })
                .map_err(|e| note!("poll_receive: {e}"))?;
            match answer {
                Some(mac) => {
                    return Ok(ArpReply {
                        mac,
                        after_us: clock.now_us() - started,
                        requests,
                        other_frames,
                    });
                }
                None if polled => other_frames += 1,
                None => {}
            }
        }
        if give_up.passed(clock) {
            return Err(note!(
                "no reply in {} ms ({requests} requests, {other_frames} other frames)",
                ARP_TIMEOUT_US / 1000
            ));
        }
    }
}

/// Builds a tagged UDP frame of `payload_len` bytes (≥ TAG_LEN).
fn send_tagged(
    nic: &mut impl DeviceUnderTest,
    flow: &UdpFlow,
    payload_len: usize,
    phase: u8,
    seq: u32,
    total: u32,
) -> Result<(), NicError> {
    nic.transmit(udp_frame_len(payload_len), &mut |frame| {
        flow.emit(frame, payload_len, |payload| {
            payload[..4].copy_from_slice(TAG);
            payload[4] = phase;
            payload[5..8].fill(0);
            payload[8..12].copy_from_slice(&seq.to_be_bytes());
            payload[12..16].copy_from_slice(&total.to_be_bytes());
            for (i, byte) in payload[TAG_LEN..].iter_mut().enumerate() {
                *byte = (seq as usize + i) as u8;
            }
        })
    })
}

/// Waits (bounded) until `poll_transmit` frees at least one descriptor.
fn reclaim_some(nic: &mut impl DeviceUnderTest, clock: &TscClock) -> Result<usize, Note> {
    let deadline = Deadline::after(clock, RECLAIM_TIMEOUT_US);
    loop {
        let freed = nic.poll_transmit();
        if freed > 0 {
            return Ok(freed);
        }
        if deadline.passed(clock) {
            return Err(note!(
                "no descriptor completed within {} ms",
                RECLAIM_TIMEOUT_US / 1000
            ));
        }
    }
}

/// Sends `total` frames with `phase`, relying on RingFull for back-pressure: completions
/// are reclaimed only when the ring is full. Returns (ring-full events, bytes sent).
fn send_phase(
    nic: &mut impl DeviceUnderTest,
    clock: &TscClock,
    flow: &UdpFlow,
    phase: u8,
    total: u32,
) -> Result<(u32, u64), Note> {
    let mut ring_full = 0;
    let mut bytes = 0;
    for seq in 0..total {
        let payload_len = PAYLOAD_SIZES[seq as usize % PAYLOAD_SIZES.len()];
        loop {
            match send_tagged(nic, flow, payload_len, phase, seq, total) {
                Ok(()) => break,
                Err(NicError::RingFull) => {
                    ring_full += 1;
                    reclaim_some(nic, clock)?;
                }
                Err(e) => return Err(note!("frame {seq} of phase {phase}: {e}")),
            }
        }
        bytes += udp_frame_len(payload_len) as u64;
        // Keep the receive ring drained; nothing here expects traffic back.
        if seq % 64 == 0 {
            let _ = nic.poll_receive(&mut |_| {});
        }
    }
    Ok((ring_full, bytes))
}

/// Reclaims every outstanding transmit descriptor (bounded).
fn drain_transmit(nic: &mut impl DeviceUnderTest, clock: &TscClock) -> Result<(), Note> {
    while nic.tx_in_flight() > 0 {
        reclaim_some(nic, clock)?;
    }
    Ok(())
}

fn udp_flood(
    nic: &mut impl DeviceUnderTest,
    clock: &TscClock,
    flow: &UdpFlow,
    total: u32,
) -> Result<Note, Note> {
    let started = clock.now_us();
    let (ring_full, bytes) = send_phase(nic, clock, flow, 1, total)?;
    drain_transmit(nic, clock)?;
    let elapsed = (clock.now_us() - started).max(1);
    if ring_full == 0 {
        return Err(note!(
            "{total} frames sent but the ring never reported RingFull"
        ));
    }
    Ok(note!(
        "{total} frames ({} KiB) to {}:{} in {} ms: {} frames/s, {} Mbit/s; ring wrapped {} times, \
         {ring_full} RingFull recovered by poll_transmit",
        bytes / 1024,
        flow.dst_ip,
        flow.dst_port,
        elapsed / 1000,
        u64::from(total) * 1_000_000 / elapsed,
        bytes * 8 / elapsed,
        total / 32
    ))
}

fn frame_length_limits(nic: &mut impl DeviceUnderTest, flow: &UdpFlow) -> Result<Note, Note> {
    let mut filled = false;
    let too_large = nic.transmit(1515, &mut |_| filled = true);
    if too_large
        != Err(NicError::FrameTooLarge {
            len: 1515,
            max: 1514,
        })
        || filled
    {
        return Err(note!(
            "1515-byte frame: {too_large:?}, fill called: {filled}"
        ));
    }
    let too_short = nic.transmit(13, &mut |_| filled = true);
    if too_short != Err(NicError::FrameTooShort { len: 13 }) || filled {
        return Err(note!("13-byte frame: {too_short:?}, fill called: {filled}"));
    }
    let largest = send_tagged(nic, flow, MAX_UDP_PAYLOAD, 4, 0, 1);
    if let Err(e) = largest {
        return Err(note!("1514-byte frame refused: {e}"));
    }
    Ok(note!(
        "1515 bytes: FrameTooLarge {{ max: 1514 }}, 13 bytes: FrameTooShort, 1514 bytes: sent"
    ))
}

/// Leaves the device the way a dying OS driver might, with frames queued, then takes it
/// over with `reset` and proves it works (ARP round trip, more UDP).
fn takeover(
    nic: &mut impl DeviceUnderTest,
    clock: &TscClock,
    flow: &UdpFlow,
    gateway: EthernetAddress,
) -> Result<Note, Note> {
    // An ARP request whose reply lands in the receive ring and is never polled.
    let mac = flow.src_mac;
    nic.transmit(ARP_FRAME_LEN, &mut |frame| {
        frames::arp_request(frame, mac, GUEST_IP, GATEWAY_IP)
    })
    .map_err(|e| note!("ARP request: {e}"))?;
    // Queue frames without reclaiming until the ring is full.
    let mut queued = 0u32;
    loop {
        match send_tagged(nic, flow, 200, 9, queued, 0) {
            Ok(()) => queued += 1,
            Err(NicError::RingFull) => break,
            Err(e) => return Err(note!("queueing: {e}")),
        }
    }
    let in_flight_before = nic.tx_in_flight();

    nic.leave_dirty();

    let started = clock.now_us();
    nic.reset().map_err(|e| note!("reset: {e}"))?;
    let took = clock.now_us() - started;

    nic.check_clean()?;
    if nic.tx_in_flight() != 0 || !nic.bus_master_enabled() {
        return Err(note!(
            "after reset: {} frames in flight, bus master {}",
            nic.tx_in_flight(),
            nic.bus_master_enabled()
        ));
    }
    let reply = arp_round_trip(nic, clock, mac)?;
    if reply.mac != gateway {
        return Err(note!("gateway now answers as {}, was {gateway}", reply.mac));
    }
    let (_, _) = send_phase(nic, clock, flow, 2, 100)?;
    drain_transmit(nic, clock)?;
    Ok(note!(
        "{in_flight_before} frames queued, registers dirtied; reset in {took} us cleared them; \
         ARP reply after {} us; 100 more frames sent",
        reply.after_us
    ))
}

fn repeated_reset(
    nic: &mut impl DeviceUnderTest,
    clock: &TscClock,
    flow: &UdpFlow,
    gateway: EthernetAddress,
) -> Result<Note, Note> {
    let mut slowest = 0;
    for round in 0..5 {
        // Something in flight each time.
        send_tagged(nic, flow, 64, 3, round, 5).map_err(|e| note!("round {round}: {e}"))?;
        let started = clock.now_us();
        nic.reset().map_err(|e| note!("round {round}: {e}"))?;
        slowest = slowest.max(clock.now_us() - started);
    }
    let reply = arp_round_trip(nic, clock, flow.src_mac)?;
    if reply.mac != gateway {
        return Err(note!("gateway now answers as {}", reply.mac));
    }
    Ok(note!(
        "5 resets, slowest {slowest} us; ARP reply after {} us",
        reply.after_us
    ))
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    netdump_qemu_runtime::default_panic(info)
}
